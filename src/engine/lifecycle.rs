//! A session's life: its row made, its second factor proven (the one rule
//! that makes it verified, whichever face proved it), its lifetime, its
//! token, reading, listing, and revocation.

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::caller::Caller;
use super::challenges::{self, CodeFor};
use super::{PENDING, REVOKED, VERIFIED, effective_status, is_live};
use crate::config::AuthSettings;
use crate::db::DbConnection;
use crate::db::sessions::{self as rows, SessionChanges, SessionRow};
use crate::db::users::{self, UserRow};
use crate::error::{ApiError, ErrorCode};
use crate::services::audit::{self, AuditKind, ClientInfo};
use crate::services::{Core, Page, Paged, parse_id, to_utc};
use crate::tokens::Claims;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FactorView {
    pub verified_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FactorsView {
    pub password: Option<FactorView>,
    pub otp_email: Option<FactorView>,
    pub totp: Option<FactorView>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserAgentView {
    pub ip: Option<String>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    pub id: String,
    pub user_id: String,
    pub entity_id: String,
    pub application_id: Option<String>,
    /// pending, verified, failed, expired or revoked.
    pub status: String,
    #[serde(rename = "passedLoginOTP")]
    pub passed_login_otp: bool,
    pub factors: FactorsView,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub user_agent: UserAgentView,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub verified_at: Option<DateTime<Utc>>,
    pub failure_code: Option<String>,
    pub failure_reason: Option<String>,
    pub sequence: i64,
}

fn factor(at: Option<NaiveDateTime>) -> Option<FactorView> {
    at.map(|t| FactorView {
        verified_at: to_utc(t),
    })
}

impl SessionView {
    pub fn new(row: SessionRow, now: NaiveDateTime) -> Self {
        Self {
            status: effective_status(&row, now).to_owned(),
            metadata: serde_json::from_str(&row.metadata)
                .unwrap_or_else(|_| Value::Object(Default::default())),
            factors: FactorsView {
                password: factor(row.password_verified_at),
                otp_email: factor(row.otp_email_verified_at),
                totp: factor(row.totp_verified_at),
            },
            user_agent: UserAgentView {
                ip: row.user_agent_ip,
                description: row.user_agent_description,
            },
            id: row.id,
            user_id: row.user_id,
            entity_id: row.entity_id,
            application_id: row.application_id,
            passed_login_otp: row.passed_login_otp,
            created_at: to_utc(row.created_at),
            updated_at: to_utc(row.updated_at),
            expires_at: to_utc(row.expires_at),
            verified_at: row.verified_at.map(to_utc),
            failure_code: row.failure_code,
            failure_reason: row.failure_reason,
            sequence: row.sequence,
        }
    }
}

/// Issues a session token whose `jti` becomes the session's current token.
pub fn issue_session_token(
    core: &Core,
    user_id: &str,
    session_id: &str,
    expires_at: NaiveDateTime,
) -> Result<(String, Claims), ApiError> {
    let ttl = expires_at - core.now();
    core.tokens.issue(
        user_id,
        "session",
        ttl.max(Duration::seconds(1)),
        Some(session_id),
    )
}

/// Hands a live session of `user_id` a new token: the old one stops
/// working (the session's current `jti` is the new one's). For the starter
/// of an asynchronous login, who learns the token only once the login is
/// valid. `claim` runs first in the same transaction (the face's record
/// that the token was handed out): when it answers false, or the session is
/// no longer live or no longer the user's, nothing changes and `None` is
/// returned.
pub async fn reissue_token<C>(
    core: &Core,
    session_id: &str,
    user_id: &str,
    claim: C,
) -> Result<Option<(String, NaiveDateTime)>, ApiError>
where
    C: FnOnce(&mut DbConnection) -> Result<bool, ApiError> + Send + 'static,
{
    let now = core.now();
    let row = find_session(core, session_id).await?;
    if !is_live(&row, now) || row.user_id != user_id {
        return Ok(None);
    }
    let (token, claims) = issue_session_token(core, &row.user_id, &row.id, row.expires_at)?;
    let (id, user_id) = (row.id.clone(), user_id.to_owned());
    let handed_out = core
        .db
        .write(move |conn| {
            let Some(row) = rows::find_for_update(conn, &id)? else {
                return Ok(false);
            };
            if !is_live(&row, now) || row.user_id != user_id || !claim(conn)? {
                return Ok(false);
            }
            let changes = SessionChanges {
                token_id: Some(Some(claims.jti.clone())),
                ..SessionChanges::default()
            };
            rows::update(conn, &row.id, &changes, now)?;
            Ok::<_, ApiError>(true)
        })
        .await?;
    Ok(handed_out.then_some((token, row.expires_at)))
}

/// What a new session starts with.
pub struct NewSession<'a> {
    pub id: &'a str,
    pub user: &'a UserRow,
    pub application_id: Option<String>,
    pub client: &'a ClientInfo,
    pub expires_at: NaiveDateTime,
    /// Opened by a password check (a login), not by a trusted backend.
    pub password_verified: bool,
    /// The `jti` of the session's first token, if one is issued now.
    pub token_id: Option<&'a str>,
    /// The user agent as the client reported it (v2); without one, the
    /// connection's address and User-Agent header are kept.
    pub user_agent: Option<&'a UserAgent>,
    /// Who creates the session (see [`Caller::creator`]).
    pub creator: String,
    /// What a trusted backend binds the session to (the asynchronous face).
    pub binding: Option<&'a Binding>,
}

/// What a trusted backend binds a session to (seeds 000 and 001): a field
/// of the user's entity or application with its value, the applications by
/// type, and a context object.
#[derive(Debug, Clone, Default)]
pub struct Binding {
    pub entity_field: Option<String>,
    pub entity_field_value: Option<String>,
    pub mobile_application_id: Option<String>,
    pub desktop_application_id: Option<String>,
    /// A JSON object, as text.
    pub context: Option<String>,
}

/// A user agent as a v2 client reports it (ZITADEL's `UserAgent`), stored
/// as sent.
#[derive(Debug, Default, Clone)]
pub struct UserAgent {
    pub fingerprint_id: Option<String>,
    pub ip: Option<String>,
    pub description: Option<String>,
    pub header: Option<std::collections::BTreeMap<String, Vec<String>>>,
}

/// Inserts a pending session; an id in use is a 409 at `/sessionId`.
pub fn insert_session(
    conn: &mut DbConnection,
    new: NewSession<'_>,
    now: NaiveDateTime,
) -> Result<SessionRow, ApiError> {
    // A taken id is the primary key's unique violation below (one
    // statement fewer than looking first, on every new session).
    let row = SessionRow {
        id: new.id.to_owned(),
        user_id: new.user.id.clone(),
        entity_id: new.user.entity_id.clone(),
        application_id: new.application_id,
        status: PENDING.to_owned(),
        passed_login_otp: false,
        password_verified_at: new.password_verified.then_some(now),
        otp_email_verified_at: None,
        totp_verified_at: None,
        metadata: "{}".to_owned(),
        user_agent_ip: match new.user_agent {
            Some(agent) => agent.ip.clone(),
            None => new.client.ip.map(|ip| ip.to_string()),
        },
        user_agent_description: match new.user_agent {
            Some(agent) => agent.description.clone(),
            None => new.client.user_agent.clone(),
        },
        user_agent_fingerprint_id: new.user_agent.and_then(|a| a.fingerprint_id.clone()),
        user_agent_header: new
            .user_agent
            .and_then(|a| a.header.as_ref())
            .and_then(|h| serde_json::to_string(h).ok()),
        creator: Some(new.creator),
        entity_field: new.binding.and_then(|b| b.entity_field.clone()),
        entity_field_value: new.binding.and_then(|b| b.entity_field_value.clone()),
        mobile_application_id: new.binding.and_then(|b| b.mobile_application_id.clone()),
        desktop_application_id: new.binding.and_then(|b| b.desktop_application_id.clone()),
        context: new.binding.and_then(|b| b.context.clone()),
        token_id: new.token_id.map(str::to_owned),
        created_at: now,
        updated_at: now,
        expires_at: new.expires_at,
        verified_at: None,
        failure_code: None,
        failure_reason: None,
        sequence: 1,
    };
    rows::insert(conn, &row).map_err(|err| {
        // The primary key is the only unique constraint of sessions: a
        // concurrent insert of the same id.
        if let diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        ) = err
        {
            return session_id_taken();
        }
        err.into()
    })?;
    Ok(row)
}

fn session_id_taken() -> ApiError {
    ApiError::conflict("A session with this sessionId already exists.").at_pointer("/sessionId")
}

/// The session `session_id` as the caller may work on it (see
/// [`Caller::ensure_visible`]), locked until the transaction ends, if live.
pub fn visible_live_session(
    conn: &mut DbConnection,
    caller: &Caller,
    session_id: &str,
    now: NaiveDateTime,
) -> Result<SessionRow, ApiError> {
    let row = rows::find_for_update(conn, session_id)?
        .ok_or_else(|| ApiError::not_found(format!("There is no session {session_id:?}.")))?;
    caller.ensure_visible(&row)?;
    ensure_live(&row, now)?;
    Ok(row)
}

/// [`visible_live_session`] with its user's row, both locked, in one
/// statement (the check of a code needs both).
pub fn visible_live_session_and_user(
    conn: &mut DbConnection,
    caller: &Caller,
    session_id: &str,
    now: NaiveDateTime,
) -> Result<(SessionRow, UserRow), ApiError> {
    let (row, user) = rows::find_with_user_for_update(conn, session_id)?
        .ok_or_else(|| ApiError::not_found(format!("There is no session {session_id:?}.")))?;
    caller.ensure_visible(&row)?;
    ensure_live(&row, now)?;
    Ok((row, user))
}

/// The session's row, locked until the transaction ends, if it is live.
pub fn lock_live_session(
    conn: &mut DbConnection,
    session_id: &str,
    now: NaiveDateTime,
) -> Result<SessionRow, ApiError> {
    let row = rows::find_for_update(conn, session_id)?
        .ok_or_else(|| ApiError::not_found(format!("There is no session {session_id:?}.")))?;
    ensure_live(&row, now)?;
    Ok(row)
}

pub fn ensure_live(row: &SessionRow, now: NaiveDateTime) -> Result<(), ApiError> {
    if is_live(row, now) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::SessionClosed,
            format!(
                "The session is {}; start a new one.",
                effective_status(row, now)
            ),
        ))
    }
}

/// Which second factor a session proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondFactor {
    /// The emailed login code.
    OtpEmail,
    /// An authenticator app code, or a recovery code in its place.
    Totp,
}

/// The one rule of verification, on every face: a session whose second
/// factor is proven is verified (and `passedLoginOTP` records it). The
/// caller holds the session's row lock, and audits `session_verified`
/// with the match when this returns true (the session became verified now).
pub fn second_factor_proven(
    conn: &mut DbConnection,
    session: &SessionRow,
    factor: SecondFactor,
    now: NaiveDateTime,
) -> Result<bool, ApiError> {
    let mut proven = SessionChanges::default();
    match factor {
        SecondFactor::OtpEmail => proven.otp_email_verified_at = Some(Some(now)),
        SecondFactor::Totp => proven.totp_verified_at = Some(Some(now)),
    }
    mark_verified(conn, session, proven, now)
}

/// A trusted backend vouches for the user's second factor (PACE
/// `passedLoginOTP: true` with an admin token).
fn vouched(
    conn: &mut DbConnection,
    session: &SessionRow,
    client: &ClientInfo,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    if session.status == VERIFIED {
        return Ok(());
    }
    if mark_verified(conn, session, SessionChanges::default(), now)? {
        audit::record(
            conn,
            AuditKind::SessionVerified,
            Some(&session.user_id),
            Some(&session.id),
            client,
            None,
            now,
        )?;
    }
    Ok(())
}

/// Applies `changes` and makes the session verified; whether the status
/// changed now (the caller audits `session_verified` then).
fn mark_verified(
    conn: &mut DbConnection,
    session: &SessionRow,
    mut changes: SessionChanges,
    now: NaiveDateTime,
) -> Result<bool, ApiError> {
    changes.status = Some(VERIFIED.to_owned());
    changes.passed_login_otp = Some(true);
    // Decided on the row as it is now (one command may prove two factors):
    // the first change that verifies it sets `verified_at` and is audited.
    let first = SessionChanges {
        verified_at: Some(Some(now)),
        ..changes.clone()
    };
    let newly_verified = rows::update_unless_status(conn, &session.id, &first, VERIFIED, now)?;
    if !newly_verified {
        rows::update(conn, &session.id, &changes, now)?;
    }
    Ok(newly_verified)
}

/// The most a session may live: the hard bound for admins, the configured
/// session lifetime for everyone else (a session token cannot extend
/// itself beyond what the operator allows).
pub fn check_lifetime(
    settings: &AuthSettings,
    caller: Option<&Caller>,
    lifetime: Duration,
) -> Result<Duration, ApiError> {
    if lifetime <= Duration::zero() || lifetime > Duration::days(366) {
        return Err(ApiError::invalid_field(
            "/lifetime",
            "lifetime must be between 1s and 366 days.",
        ));
    }
    let limit = Duration::seconds(settings.session_lifetime_secs);
    if !caller.is_some_and(Caller::is_admin) && lifetime > limit {
        return Err(ApiError::new(
            ErrorCode::LifetimeTooLong,
            format!(
                "lifetime may be at most {} s (the configured session lifetime); only an admin token may set more.",
                settings.session_lifetime_secs
            ),
        )
        .at_pointer("/lifetime"));
    }
    Ok(lifetime)
}

/// What `PUT /sessions/{id}` did.
#[derive(Debug)]
pub enum UpdateOutcome {
    /// A code was made and mailed.
    CodeSent {
        code: String,
        expires_at: DateTime<Utc>,
    },
    /// The session is verified.
    Verified,
}

/// `PUT /sessions/{sessionId}` with `{userId, passedLoginOTP}`: with
/// `false`, a fresh login code is mailed (an admin creates the session
/// first if it does not exist); with `true`, the outcome is recorded: the
/// session is verified once its second factor is proven (an admin vouches
/// for it instead).
pub async fn update(
    core: &Core,
    caller: &Caller,
    raw_session_id: &str,
    user_id: String,
    passed_login_otp: bool,
    client: ClientInfo,
) -> Result<UpdateOutcome, ApiError> {
    let session_id = parse_id(raw_session_id, "session")?;
    let user_id = user_id.to_ascii_lowercase();
    if let Caller::User {
        user_id: own_user, ..
    } = caller
    {
        caller
            .ensure_own(&session_id)
            .map_err(|_| ApiError::forbidden("A session token may only change its own session."))?;
        if *own_user != user_id {
            return Err(
                ApiError::forbidden("userId is not the user of this token.").at_pointer("/userId")
            );
        }
    }
    core.check_rate_limit(client.ip).await?;
    let is_admin = caller.is_admin();
    let creator = caller.creator();
    let now = core.now();
    let rules = core.rules();
    let outcome = core
        .db
        .write(move |conn| {
            let Some(user) = users::find(conn, &user_id)? else {
                return Err(ApiError::new(
                    ErrorCode::UserNotFound,
                    format!("There is no user with id {user_id:?}."),
                ));
            };
            let (session, created) = match rows::find_for_update(conn, &session_id)? {
                None if !is_admin => {
                    return Err(ApiError::not_found(format!(
                        "There is no session {session_id:?}."
                    )));
                }
                None => {
                    challenges::require_email(&user)?;
                    let expires_at = now + Duration::seconds(rules.settings.session_lifetime_secs);
                    let new = NewSession {
                        binding: None,
                        id: &session_id,
                        user: &user,
                        application_id: None,
                        client: &client,
                        expires_at,
                        password_verified: false,
                        token_id: None,
                        user_agent: None,
                        creator: creator.clone(),
                    };
                    let row = insert_session(conn, new, now)?;
                    audit::record(
                        conn,
                        AuditKind::SessionCreated,
                        Some(&user.id),
                        Some(&session_id),
                        &client,
                        None,
                        now,
                    )?;
                    (row, true)
                }
                Some(row) if row.user_id != user.id => {
                    return Err(ApiError::not_found(format!(
                        "The user has no session {session_id:?}."
                    )));
                }
                Some(row) => {
                    ensure_live(&row, now)?;
                    (row, false)
                }
            };

            // A new session always gets its code first.
            if passed_login_otp && !created {
                if is_admin {
                    vouched(conn, &session, &client, now)?;
                } else if session.status != VERIFIED {
                    return Err(ApiError::new(
                        ErrorCode::OtpNotVerified,
                        "Verify the login code with POST /user/otp/verify first.",
                    ));
                }
                return Ok(UpdateOutcome::Verified);
            }
            let target = CodeFor {
                user: &user,
                session: &session,
                new_session: created,
            };
            let (code, expires_at) = rules.mail_login_code(conn, target, &client, now)?;
            if !created {
                // A new session's insert already counts as this change.
                rows::update(conn, &session.id, &SessionChanges::default(), now)?;
            }
            Ok(UpdateOutcome::CodeSent {
                code,
                expires_at: to_utc(expires_at),
            })
        })
        .await?;
    if matches!(outcome, UpdateOutcome::CodeSent { .. }) {
        core.mailer.wake();
    }
    Ok(outcome)
}

/// Reads a session; `known` is the caller's own session as authentication
/// just read it, which spares a second query when that is the one asked for.
pub async fn get(
    core: &Core,
    caller: &Caller,
    raw_session_id: &str,
    known: Option<SessionRow>,
) -> Result<SessionView, ApiError> {
    let session_id = parse_id(raw_session_id, "session")?;
    let now = core.now();
    if let Some(row) = known.filter(|row| row.id == session_id) {
        return Ok(SessionView::new(row, now));
    }
    let row = find_session(core, &session_id).await?;
    caller.ensure_visible(&row)?;
    Ok(SessionView::new(row, now))
}

/// A session by id, unlocked, for reading.
pub async fn find_session(core: &Core, session_id: &str) -> Result<SessionRow, ApiError> {
    let id = session_id.to_owned();
    core.db
        .run(move |conn| Ok::<_, ApiError>(rows::find(conn, &id)?))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("There is no session {session_id:?}.")))
}

/// Lists sessions: an admin's of anyone (or of `user_filter`), a verified
/// session's of its own user.
pub async fn list(
    core: &Core,
    caller: &Caller,
    user_filter: Option<String>,
    page: Page,
) -> Result<Paged<SessionView>, ApiError> {
    let user_id = match caller {
        Caller::User { user_id, .. } => {
            caller.ensure_verified()?;
            Some(user_id.clone())
        }
        Caller::Admin { .. } => user_filter,
    };
    let now = core.now();
    core.db
        .run(move |conn| {
            let (items, total) = rows::list(conn, user_id.as_deref(), page.limit, page.offset)?;
            Ok(Paged {
                items: items
                    .into_iter()
                    .map(|row| SessionView::new(row, now))
                    .collect(),
                total,
                page,
            })
        })
        .await
}

/// Revokes a session in the caller's transaction: its token stops working
/// at once. A session already revoked stays as it is.
pub fn revoke_in_tx(
    conn: &mut DbConnection,
    row: &SessionRow,
    client: &ClientInfo,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    if row.status == REVOKED {
        return Ok(());
    }
    let changes = SessionChanges {
        status: Some(REVOKED.to_owned()),
        token_id: Some(None),
        ..SessionChanges::default()
    };
    rows::update(conn, &row.id, &changes, now)?;
    audit::record(
        conn,
        AuditKind::SessionRevoked,
        Some(&row.user_id),
        Some(&row.id),
        client,
        None,
        now,
    )?;
    Ok(())
}

/// Revokes a session (logout, or an admin's or verified session's revoke of
/// another) and returns it as it is now.
pub async fn revoke(
    core: &Core,
    caller: &Caller,
    raw_session_id: &str,
    client: ClientInfo,
) -> Result<SessionRow, ApiError> {
    let session_id = parse_id(raw_session_id, "session")?;
    let caller = caller.clone();
    let now = core.now();
    core.db
        .write(move |conn| {
            let row = rows::find_for_update(conn, &session_id)?.ok_or_else(|| {
                ApiError::not_found(format!("There is no session {session_id:?}."))
            })?;
            caller.ensure_visible(&row)?;
            revoke_in_tx(conn, &row, &client, now)?;
            rows::find(conn, &session_id)?
                .ok_or_else(|| ApiError::not_found("The session was deleted."))
        })
        .await
}

//! Sessions: login with a password, the PACE-style update that sends and
//! confirms the email OTP, reading, listing and revoking. Every API face
//! works on these sessions through this module.

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::audit::{self, AuditKind, ClientInfo};
use super::credentials::{self, Secret};
use super::otp::{self, CodeDelivery};
use super::users::normalize_login_name;
use super::{Core, Page, Paged, parse_id, to_utc};
use crate::db::sessions::{self as rows, SessionChanges, SessionRow};
use crate::db::{applications, users};
use crate::error::{ApiError, ErrorCode};
use crate::tokens::Claims;

pub const PENDING: &str = "pending";
pub const VERIFIED: &str = "verified";
pub const EXPIRED: &str = "expired";
pub const REVOKED: &str = "revoked";

/// Who is calling, once the bearer token has been checked.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A token with the admin scope: a trusted backend or an operator.
    Admin { subject: String },
    /// A session token: the user, acting through one live session.
    User { user_id: String, session_id: String },
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        matches!(self, Self::Admin { .. })
    }
}

/// A pending or verified session past its end reads as expired.
pub fn effective_status(row: &SessionRow, now: NaiveDateTime) -> &str {
    if (row.status == PENDING || row.status == VERIFIED) && row.expires_at <= now {
        EXPIRED
    } else {
        &row.status
    }
}

pub fn is_live(row: &SessionRow, now: NaiveDateTime) -> bool {
    matches!(effective_status(row, now), PENDING | VERIFIED)
}

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

fn session_ended() -> ApiError {
    ApiError::unauthorized("The session of this token has ended (revoked, expired or replaced).")
}

/// Turns verified token claims into a caller: admin tokens as they are,
/// session tokens only while their session is live and the token is the
/// session's current one (revoking a session kills its token at once).
pub async fn authenticate(
    core: &Core,
    claims: Claims,
) -> Result<(Caller, Option<SessionRow>), ApiError> {
    if claims.is_admin() {
        return Ok((
            Caller::Admin {
                subject: claims.sub,
            },
            None,
        ));
    }
    let Some(session_id) = claims.sid.clone() else {
        return Err(ApiError::unauthorized(
            "This route needs a session token or an admin token.",
        ));
    };
    let now = core.now();
    let session = core
        .db
        .lookup(move |conn| Ok::<_, ApiError>(rows::find(conn, &session_id)?))
        .await?;
    match session {
        Some(row)
            if is_live(&row, now)
                && row.user_id == claims.sub
                && row.token_id.as_deref() == Some(&claims.jti) =>
        {
            let caller = Caller::User {
                user_id: row.user_id.clone(),
                session_id: row.id.clone(),
            };
            Ok((caller, Some(row)))
        }
        _ => Err(session_ended()),
    }
}

/// How a login names the user.
#[derive(Debug, Clone)]
pub enum LoginName {
    Login(String),
    EmployeeOf {
        entity_number: String,
        employee_number: String,
    },
}

#[derive(Debug)]
pub struct LoginInput {
    pub user: LoginName,
    pub password: String,
    pub application_name: Option<String>,
    pub session_id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginResult {
    pub session_id: String,
    pub session_token: String,
    pub expires_at: DateTime<Utc>,
    pub status: String,
}

fn invalid_credentials() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidCredentials,
        "The login name or the password is wrong.",
    )
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

/// `POST /sessions`: checks the password and opens a pending session with
/// its password factor verified.
pub async fn login(
    core: &Core,
    input: LoginInput,
    client: ClientInfo,
) -> Result<LoginResult, ApiError> {
    let now = core.now();
    core.rate_limiter
        .check(client.ip.as_deref(), core.clock.now())?;
    let lookup = input.user.clone();
    let user = core
        .db
        .run(move |conn| -> Result<_, ApiError> {
            Ok(match &lookup {
                LoginName::Login(name) => {
                    users::find_by_login_name(conn, &normalize_login_name(name))?
                }
                LoginName::EmployeeOf {
                    entity_number,
                    employee_number,
                } => users::find_by_entity_and_employee(conn, entity_number, employee_number)?,
            })
        })
        .await?;
    if let Some(user) = &user {
        credentials::ensure_not_locked(user, now)?;
    }
    let password_ok =
        credentials::verify(core, user.as_ref(), Secret::Password, input.password).await?;

    let (Some(user), true) = (&user, password_ok) else {
        let auth = core.settings.auth.clone();
        let user_id = user.map(|u| u.id);
        core.db
            .write(move |conn| {
                audit::record(
                    conn,
                    AuditKind::LoginFailed,
                    user_id.as_deref(),
                    None,
                    &client,
                    None,
                    now,
                )?;
                if let Some(user_id) = &user_id {
                    credentials::register_failure(&auth, conn, user_id, &client, now)?;
                }
                Ok::<_, ApiError>(())
            })
            .await?;
        return Err(invalid_credentials());
    };

    let session_id = match &input.session_id {
        Some(id) => parse_id(id, "session")?,
        None => Uuid::new_v4().to_string(),
    };
    let expires_at = now + Duration::seconds(core.settings.auth.session_lifetime_secs);
    let user = user.clone();
    let (token, claims) = issue_session_token(core, &user.id, &session_id, expires_at)?;
    let application_name = input.application_name;
    let row_session_id = session_id.clone();
    core.db
        .write(move |conn| {
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
            if rows::find(conn, &row_session_id)?.is_some() {
                return Err(
                    ApiError::conflict("A session with this sessionId already exists.")
                        .at_pointer("/sessionId"),
                );
            }
            credentials::reset_failures(conn, &user)?;
            let row = new_session_row(
                &row_session_id,
                &user.id,
                &user.entity_id,
                application_id,
                &client,
                now,
                expires_at,
            );
            rows::insert(
                conn,
                &SessionRow {
                    password_verified_at: Some(now),
                    token_id: Some(claims.jti.clone()),
                    ..row
                },
            )
            .map_err(map_session_insert)?;
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

fn map_session_insert(err: diesel::result::Error) -> ApiError {
    // The primary key is the only unique constraint of sessions.
    if let diesel::result::Error::DatabaseError(
        diesel::result::DatabaseErrorKind::UniqueViolation,
        _,
    ) = err
    {
        return ApiError::conflict("A session with this sessionId already exists.")
            .at_pointer("/sessionId");
    }
    err.into()
}

pub fn new_session_row(
    id: &str,
    user_id: &str,
    entity_id: &str,
    application_id: Option<String>,
    client: &ClientInfo,
    now: NaiveDateTime,
    expires_at: NaiveDateTime,
) -> SessionRow {
    SessionRow {
        id: id.to_owned(),
        user_id: user_id.to_owned(),
        entity_id: entity_id.to_owned(),
        application_id,
        status: PENDING.to_owned(),
        passed_login_otp: false,
        password_verified_at: None,
        otp_email_verified_at: None,
        totp_verified_at: None,
        metadata: "{}".to_owned(),
        user_agent_ip: client.ip.clone(),
        user_agent_description: client.user_agent.clone(),
        token_id: None,
        created_at: now,
        updated_at: now,
        expires_at,
        verified_at: None,
        failure_code: None,
        failure_reason: None,
        sequence: 1,
    }
}

/// What `PUT /sessions/{id}` did.
#[derive(Debug)]
pub enum UpdateOutcome {
    /// A code was made and mailed.
    CodeSent {
        code: String,
        expires_at: DateTime<Utc>,
    },
    /// The session is now verified.
    Verified,
}

/// `PUT /sessions/{sessionId}` with `{userId, passedLoginOTP}`.
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
        user_id: own_user,
        session_id: own_session,
    } = caller
    {
        if *own_session != session_id {
            return Err(ApiError::forbidden(
                "A session token may only change its own session.",
            ));
        }
        if *own_user != user_id {
            return Err(
                ApiError::forbidden("userId is not the user of this token.").at_pointer("/userId")
            );
        }
    }
    core.rate_limiter
        .check(client.ip.as_deref(), core.clock.now())?;
    let is_admin = caller.is_admin();
    let now = core.now();
    let engine = core.otp_engine();
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
                    otp::require_email(&user)?;
                    let expires_at = now + Duration::seconds(engine.settings.session_lifetime_secs);
                    let row = new_session_row(
                        &session_id,
                        &user.id,
                        &user.entity_id,
                        None,
                        &client,
                        now,
                        expires_at,
                    );
                    rows::insert(conn, &row).map_err(map_session_insert)?;
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
                Some(row) if !is_live(&row, now) => {
                    return Err(ApiError::new(
                        ErrorCode::SessionClosed,
                        format!(
                            "The session is {}; start a new one.",
                            effective_status(&row, now)
                        ),
                    ));
                }
                Some(row) => (row, false),
            };

            // A new session always gets its code first.
            if passed_login_otp && !created {
                let second_factor = session.otp_email_verified_at.or(session.totp_verified_at);
                if second_factor.is_none() && !is_admin {
                    return Err(ApiError::new(
                        ErrorCode::OtpNotVerified,
                        "Verify the login code with POST /user/otp/verify first.",
                    ));
                }
                let changes = SessionChanges {
                    status: Some(VERIFIED.to_owned()),
                    passed_login_otp: Some(true),
                    verified_at: Some(Some(now)),
                    ..SessionChanges::default()
                };
                rows::update(conn, &session.id, &changes, now)?;
                audit::record(
                    conn,
                    AuditKind::SessionVerified,
                    Some(&user.id),
                    Some(&session.id),
                    &client,
                    None,
                    now,
                )?;
                return Ok(UpdateOutcome::Verified);
            }

            let (code, expires_at) = engine.send_login_code(
                conn,
                &user,
                &session,
                &CodeDelivery::Mail {
                    link_template: None,
                },
                &client,
                now,
            )?;
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

/// A user reaches only their own sessions; an admin every session.
fn ensure_visible(caller: &Caller, row: &SessionRow) -> Result<(), ApiError> {
    match caller {
        Caller::User { user_id, .. } if *user_id != row.user_id => Err(ApiError::not_found(
            format!("There is no session {:?}.", row.id),
        )),
        _ => Ok(()),
    }
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
    let row = core
        .db
        .run({
            let session_id = session_id.clone();
            move |conn| Ok::<_, ApiError>(rows::find(conn, &session_id)?)
        })
        .await?
        .ok_or_else(|| ApiError::not_found(format!("There is no session {session_id:?}.")))?;
    ensure_visible(caller, &row)?;
    Ok(SessionView::new(row, now))
}

pub async fn list(
    core: &Core,
    caller: &Caller,
    user_filter: Option<String>,
    page: Page,
) -> Result<Paged<SessionView>, ApiError> {
    let user_id = match caller {
        Caller::User { user_id, .. } => Some(user_id.clone()),
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

/// Revokes a session: its token stops working at once.
pub async fn revoke(
    core: &Core,
    caller: &Caller,
    raw_session_id: &str,
    client: ClientInfo,
) -> Result<(), ApiError> {
    let session_id = parse_id(raw_session_id, "session")?;
    let caller = caller.clone();
    let now = core.now();
    core.db
        .write(move |conn| {
            let row = rows::find_for_update(conn, &session_id)?.ok_or_else(|| {
                ApiError::not_found(format!("There is no session {session_id:?}."))
            })?;
            ensure_visible(&caller, &row)?;
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
                &client,
                None,
                now,
            )?;
            Ok::<_, ApiError>(())
        })
        .await
}
